from fireflyhpc.cli import run

run()
