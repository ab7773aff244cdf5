"""The operations console: a read model of the pipeline\x27s topics and the pages people work in."""
