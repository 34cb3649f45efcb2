"""A module that lists mutants living outside the suite (``conformance.mutation --targets MODULE``)."""
TARGETS = ["tests.targets.misbehaving:two_bugs", "tests.targets.misbehaving:crashing"]
