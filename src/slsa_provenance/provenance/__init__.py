"""What the build made and where it came from: the drop's subjects, the run's context, the Statement."""
