"""Pure pieces of a connect session's plan: the job script and what to run on the node."""

from __future__ import annotations

from fireflyhpc.config import ResolvedSettings, config_path, templates_dir
from fireflyhpc.session.launch import PayloadSpec
from fireflyhpc.session.request import ConnectRequest


def render_job_script(request: ConnectRequest, settings: ResolvedSettings) -> str:
    """The sbatch script from the chosen template (ConfigError for a bad template)."""
    from fireflyhpc.scheduler.templates import find_template, render_template, template_values

    template = find_template(settings.template, templates_dir(config_path(request.config)))
    return render_template(template.text, template_values(settings), name=template.name)


def payload_spec(settings: ResolvedSettings, data_dirs: tuple[str, ...]) -> PayloadSpec:
    """What to start on the node, from the settings and the requested data folders.

    The server binds loopback when the tunnel reaches it over SSH on the node, all
    addresses when the login node must connect to it (the ``direct`` hop; an srun
    launch binds all addresses by itself, see :mod:`fireflyhpc.session.srun`).
    """
    bind = "0.0.0.0" if settings.hop == "direct" else "127.0.0.1"
    return PayloadSpec.from_setting(settings.payload, python=settings.python,
                                    setup=tuple(settings.setup), data_dirs=data_dirs, bind=bind,
                                    ports=settings.port_range)
