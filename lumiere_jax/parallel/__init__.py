"""Device mesh, logical axis rules and global arrays, shared by train, sample and evaluate."""
