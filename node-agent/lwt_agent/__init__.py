"""lwt_agent."""
