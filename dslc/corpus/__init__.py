"""A text corpus that ships with dslc, so that text(...) trains with no download: the project's own documentation."""
