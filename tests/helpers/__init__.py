"""What the tests share: real servers, worker processes, test apps and URLconfs."""
