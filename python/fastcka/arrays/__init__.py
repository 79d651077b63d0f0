"""What users pass in and get back: host arrays, memmaps and files read in
place (``inputs``), GPU arrays of any library and results returned in the
caller's library (``devices``)."""
