"""Executors hand RunSpecs to something that runs `bobkit run-one`: this host, Docker, or Slurm."""
