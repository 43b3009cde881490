"""Infrastructure every other part of fastnn stands on: the kernel backend registry
(`backend`), thread settings, the one validation vocabulary (`validation`), reusable
scratch arrays (`workspace`) and the random-generator convention (`rng`)."""
