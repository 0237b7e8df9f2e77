"""`make compose-check`: run docker-compose.yml for real, in containers, and report its figures.

`engine` prepares a container engine (podman with runc, cgroupfs and default ulimits, and
podman-compose from PyPI), `images` builds the images the compose file names (from Debian
packages where no registry is reachable), `stack` brings the services up in dependency order,
waits for the load, collects the figures and tears everything down; `__main__` ties them together
and prints one JSON line last. Nothing here is part of the product packages."""
