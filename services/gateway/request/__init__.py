"""What a request says: its body read within limits, and the fields that meter and limit it."""
