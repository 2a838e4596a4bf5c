"""A VM deleted while the heartbeat writes its generation file: the heartbeat does not fail, and
vm-down's purge removes the directory all the same (found by bench/failover.py: a delete failed with
"Directory not empty" right after a failover). No root needed."""
import errno
import os
import shutil

from agents.hostside.uncloud_hostside import ha, vm
from agents.hostside.uncloud_hostside.paths import vm_dir

VM_UUID = "7c000000-0000-4000-8000-000000000001"


def test_the_heartbeat_skips_a_vm_whose_directory_went_after_it_looked(tmp_path, monkeypatch):
    real_isdir = os.path.isdir
    # The purge runs between the heartbeat's look and its write: the look still saw the directory.
    monkeypatch.setattr(os.path, "isdir", lambda path: path == vm_dir(str(tmp_path), VM_UUID) or real_isdir(path))
    assert ha.kill_stale_generations(str(tmp_path), {VM_UUID: 3}) == []
    assert not real_isdir(vm_dir(str(tmp_path), VM_UUID))  # not made again either


def test_the_purge_removes_the_directory_when_a_file_appeared_meanwhile(tmp_path, monkeypatch):
    directory = tmp_path / "vms" / VM_UUID
    directory.mkdir(parents=True)
    (directory / "spec.json").write_text("{}")
    real_rmtree = shutil.rmtree
    tries = []

    def rmtree_racing_a_heartbeat(path):
        """The first pass meets the heartbeat's new generation file (a double: the race itself is a
        matter of microseconds); later passes are the real rmtree."""
        tries.append(path)
        if len(tries) == 1:
            (directory / "generation").write_text("3\n")
            raise OSError(errno.ENOTEMPTY, "Directory not empty", str(path))
        real_rmtree(path)

    monkeypatch.setattr(vm.shutil, "rmtree", rmtree_racing_a_heartbeat)
    vm.remove_vm_directory(str(directory))
    assert len(tries) == 2 and not directory.exists()


def _remember_generations(state_dir, first, count, failures):
    try:
        for generation in range(first, first + count):
            ha.remember_generation(state_dir, VM_UUID, generation)
    except Exception as error:  # reported to the parent: the race shows as FileNotFoundError
        failures.put(repr(error))


def test_vm_up_and_the_heartbeat_record_a_generation_at_the_same_time(tmp_path):
    """vm-up (refuse_stale_start) and the heartbeat (kill_stale_generations) are separate processes
    that both write the generation file: bench/failover.py saw a vm-up fail with FileNotFoundError
    when the other process had renamed the shared temporary file first."""
    import multiprocessing

    os.makedirs(vm_dir(str(tmp_path), VM_UUID))
    failures = multiprocessing.Queue()
    writers = [multiprocessing.Process(target=_remember_generations, args=(str(tmp_path), first, 400, failures))
               for first in (1, 2, 3)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    errors = [failures.get() for _ in range(failures.qsize())]
    assert errors == []
    assert ha.known_generation(str(tmp_path), VM_UUID) == 402
