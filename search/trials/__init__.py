"""One trial's life: the runner that trains it (in a worker or here), the budget that decides
whether it may start or must stop, the objectives it reports, and how trials end."""
