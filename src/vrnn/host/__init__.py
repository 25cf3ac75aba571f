"""The machine and the file system: atomic writes, the CPU's name, the allocator policy.

May import: the standard library only."""
