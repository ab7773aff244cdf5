"""regsosek."""
