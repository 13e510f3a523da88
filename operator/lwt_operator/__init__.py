"""lwt_operator."""
