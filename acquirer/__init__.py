"""acquirer."""
