"""clusterhub's JupyterHub extensions: the resource form and a Slurm spawner that polls in batches."""
