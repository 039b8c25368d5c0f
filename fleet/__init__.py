"""`fleet`: the operator CLI (offline plan, regions, and more) over the same Pulumi program `pulumi up` runs."""
