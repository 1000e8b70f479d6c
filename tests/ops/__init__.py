"""What operators meet: system checks, the management command, stats, the stampede tool."""
