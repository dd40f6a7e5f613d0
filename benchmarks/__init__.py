"""Scripts that measure speed and memory and print one JSON object on their last line."""
