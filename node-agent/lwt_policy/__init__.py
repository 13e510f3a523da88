"""lwt_policy."""
