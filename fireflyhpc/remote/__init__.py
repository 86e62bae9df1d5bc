"""The cluster side of fireflyhpc: installing it there (:mod:`.install`) and checking
that everything `connect` needs works (:mod:`.doctor`)."""

from fireflyhpc.remote.install import InstallRequest, RemoteInstall, remote_install

__all__ = ["InstallRequest", "RemoteInstall", "remote_install"]
