// TCP request/response latency, the equivalent of netperf's TCP_RR (netperf is not in Debian).
// One connection, one byte each way, TCP_NODELAY; the client times every transaction.
//
//   tcp_rr server PORT                     serve connections one after another, forever
//   tcp_rr client ADDR PORT SECONDS        print one JSON line with the transaction rate
//                                          and latency percentiles (microseconds)
//   tcp_rr probe ADDR PORT TIMEOUT_MS      exit 0 if a SYN got an answer (connected or
//                                          refused), 3 if nothing answered: the probe that
//                                          tells a benchmark its filter really drops
//
// Built by the benchmark harness at run time (clang -O2); never installed.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int parse_addr(const char *addr, const char *port, struct sockaddr_in *sa) {
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)atoi(port));
    return inet_pton(AF_INET, addr, &sa->sin_addr) == 1 ? 0 : -1;
}

static int serve(const char *port) {
    int one = 1;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) || listen(ls, 8)) {
        perror("tcp_rr server: bind/listen");
        return 1;
    }
    for (;;) {
        int c = accept(ls, NULL, NULL);
        char b;
        if (c < 0)
            continue;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        while (recv(c, &b, 1, 0) == 1 && send(c, &b, 1, 0) == 1)
            ;
        close(c);
    }
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_us(const uint32_t *v, size_t n, double p) {
    size_t i = (size_t)(p * (double)(n - 1));
    return v[i] / 1000.0;
}

static int client(const char *addr, const char *port, const char *seconds) {
    struct sockaddr_in sa;
    int one = 1;
    char b = 'x';
    size_t n = 0, cap = 1 << 16;
    uint32_t *lat = malloc(cap * sizeof(*lat));
    uint64_t sum = 0, start, deadline, t0, t1;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (parse_addr(addr, port, &sa) || !lat) {
        fprintf(stderr, "tcp_rr client: bad address %s\n", addr);
        return 2;
    }
    if (connect(s, (struct sockaddr *)&sa, sizeof(sa))) {
        perror("tcp_rr client: connect");
        return 1;
    }
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    start = now_ns();
    deadline = start + (uint64_t)(atof(seconds) * 1e9);
    for (t0 = start; t0 < deadline; t0 = t1) {
        if (send(s, &b, 1, 0) != 1 || recv(s, &b, 1, MSG_WAITALL) != 1) {
            perror("tcp_rr client: transaction");
            return 1;
        }
        t1 = now_ns();
        if (n == cap) {
            cap *= 2;
            lat = realloc(lat, cap * sizeof(*lat));
            if (!lat)
                return 1;
        }
        lat[n++] = (uint32_t)(t1 - t0);
        sum += t1 - t0;
    }
    close(s);
    if (n == 0) {
        fprintf(stderr, "tcp_rr client: no transaction completed\n");
        return 1;
    }
    qsort(lat, n, sizeof(*lat), cmp_u32);
    printf("{\"transactions\": %zu, \"seconds\": %.6f, \"mean_us\": %.3f, \"p50_us\": %.3f, "
           "\"p90_us\": %.3f, \"p99_us\": %.3f}\n",
           n, (t0 - start) / 1e9, sum / 1000.0 / (double)n, pct_us(lat, n, 0.50),
           pct_us(lat, n, 0.90), pct_us(lat, n, 0.99));
    return 0;
}

static int probe(const char *addr, const char *port, const char *timeout_ms) {
    struct sockaddr_in sa;
    struct pollfd p;
    int err = 0;
    socklen_t len = sizeof(err);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (parse_addr(addr, port, &sa))
        return 2;
    if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0)
        return 0;
    if (errno == ECONNREFUSED)
        return 0;
    if (errno != EINPROGRESS) {
        perror("tcp_rr probe: connect");
        return 1;
    }
    p.fd = s;
    p.events = POLLOUT;
    if (poll(&p, 1, atoi(timeout_ms)) == 0)
        return 3; // no SYN-ACK and no RST: the SYN was dropped on the way
    getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
    return (err == 0 || err == ECONNREFUSED) ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "server"))
        return serve(argv[2]);
    if (argc == 5 && !strcmp(argv[1], "client"))
        return client(argv[2], argv[3], argv[4]);
    if (argc == 5 && !strcmp(argv[1], "probe"))
        return probe(argv[2], argv[3], argv[4]);
    fprintf(stderr, "usage: tcp_rr server PORT | client ADDR PORT SECONDS | "
                    "probe ADDR PORT TIMEOUT_MS\n");
    return 2;
}
