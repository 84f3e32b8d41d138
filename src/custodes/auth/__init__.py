"""Who may do what: users, roles, sessions."""
