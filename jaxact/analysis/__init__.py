"""Whole-lesson analysis building blocks (numpy, host side): tracking, seats, intervals."""
