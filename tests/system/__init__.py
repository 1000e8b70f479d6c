"""The whole thing: the demo, a browser, soaks, benchmarks' short runs, the pip user's path, typing."""
