"""The staff roles, by name: a module of its own so that the command line can name them in its
help without loading the services."""

ROLES = ("moderator", "legal", "auditor", "admin")
