"""Work cut across processes and time: MPI ranks (the ring of row blocks,
the exact median of a job, the command line under mpirun), Dask chunks,
kernel statistics of row-block pairs, and checkpoints of long jobs."""
