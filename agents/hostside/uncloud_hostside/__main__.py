"""Entry point: one verb per invocation, or `serve` for many, one JSON line each.

    python3 uncloud_hostside.pyz VERB  < spec.json  > answer.json
    python3 uncloud_hostside.pyz serve
    python3 uncloud_hostside.pyz console-pipe   (console.py: a spec line, then a byte pipe)
"""

import json
import sys

from .dispatch import VERBS, run_verb
from .errors import EXIT_BAD_SPEC, EXIT_FAILURE, EXIT_OK, HostsideError, bad_spec
from .ha import spec_of_request


def read_spec(stdin_text):
    try:
        return json.loads(stdin_text)
    except ValueError as error:
        raise bad_spec(f"stdin is not JSON: {error}") from None


def answer_for(verb, read_request_spec):
    """One verb's answer object and exit status; the caller must always get one JSON object."""
    try:
        result = run_verb(verb, read_request_spec())
        return {"ok": True, "result": result}, EXIT_OK
    except HostsideError as error:
        return {"ok": False, "error": error.as_dict()}, (EXIT_BAD_SPEC if error.code == "bad_spec"
                                                          else EXIT_FAILURE)
    except Exception as error:
        return {"ok": False, "error": {"code": "internal_error",
                                       "message": f"{type(error).__name__}: {error}",
                                       "stderr": "", "argv": []}}, EXIT_FAILURE


def write_answer(answer):
    sys.stdout.write(json.dumps(answer, sort_keys=True) + "\n")
    sys.stdout.flush()


def serve():
    """Answer requests until stdin closes: one JSON line `{"verb": ..., "spec": {...}}` in, one
    answer line out. The control plane keeps one such process per pooled SSH connection, so a
    verb costs a round trip on an open channel instead of an SSH exec and a Python start."""
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = read_spec(line)
            if not isinstance(request, dict) or set(request) - {"holder"} != {"verb", "spec"} \
                    or not isinstance(request["verb"], str):
                raise bad_spec('a request is one line: {"verb": "...", "spec": {...}, "holder": {...}?}')
            if request["verb"] == "serve":
                raise bad_spec("serve cannot be requested inside serve")
        except HostsideError as error:
            write_answer({"ok": False, "error": error.as_dict()})
            continue
        # A step's call is refused when a newer step of its target already reached this host.
        answer, _ = answer_for(request["verb"], lambda request=request: spec_of_request(request))
        write_answer(answer)
    return EXIT_OK


def main():
    argv = sys.argv[1:]
    if argv == ["serve"]:
        return serve()
    if len(argv) == 3 and argv[0] == "migration-relay":
        from .migration import migration_relay

        # sshd's forced command for one migration's key (destination side): <state_dir> <vm uuid>.
        return migration_relay(argv[1], argv[2])
    if len(argv) == 2 and argv[0] == "migration-tunnel":
        from .migration import migration_tunnel

        return migration_tunnel(argv[1])  # the source side's daemon; neither reads a spec from stdin
    if argv == ["console-pipe"]:
        from .console import console_pipe

        return console_pipe()
    if len(argv) == 2 and argv[0] == "guard":  # the fence guard (ha.py), started by heartbeat
        from .checks import check_state_dir
        from .ha import run_guard

        return run_guard(check_state_dir(argv[1]))
    if len(argv) == 2 and argv[0] == "exporter":  # the Prometheus exporter daemon, started by exporter-up
        from .checks import check_state_dir
        from .exporter import serve_exporter

        return serve_exporter(check_state_dir(argv[1]))
    if len(argv) != 1:
        write_answer({"ok": False, "error": bad_spec(
            f"usage: uncloud_hostside.pyz VERB < spec.json, or serve; verbs: {', '.join(VERBS)}"
        ).as_dict()})
        return EXIT_BAD_SPEC
    answer, status = answer_for(argv[0], lambda: read_spec(sys.stdin.read()))
    write_answer(answer)
    return status


if __name__ == "__main__":
    sys.exit(main())
