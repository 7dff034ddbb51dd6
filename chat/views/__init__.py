"""Server-rendered pages: the staff console, the demo page and the widget script."""
