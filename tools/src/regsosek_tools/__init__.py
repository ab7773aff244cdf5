"""regsosek_tools."""
