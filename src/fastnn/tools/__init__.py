"""Tools loaded on use, never by ``import fastnn``: the benchmark (`bench`), the memory
report (`memory`), plots (`plots`) and the command line (`cli`)."""
