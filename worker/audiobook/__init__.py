"""Audiobooks: turning books into chapters, chapters into audio."""
