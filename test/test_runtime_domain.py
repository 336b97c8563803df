"""Each graph on a ROS domain of its own: claimed with a lock, chosen when not given, refused
when another graph holds the one asked for."""

import subprocess
import sys

import pytest

from dp_ros.runtime import domain


def test_a_free_domain_is_chosen_and_written_into_the_environment(tmp_path, monkeypatch):
    monkeypatch.setattr(domain, "LOCK_DIR", tmp_path)
    env_a, env_b = {}, {}
    a = domain.claim(env_a)
    b = domain.claim(env_b)
    try:
        assert a.chosen and b.chosen and a.domain_id != b.domain_id
        assert env_a["ROS_DOMAIN_ID"] == str(a.domain_id) and env_b["ROS_DOMAIN_ID"] == str(b.domain_id)
        assert "ROS_DOMAIN_ID=" in a.describe()
    finally:
        a.release(), b.release()
    c = domain.claim({})                      # released: the first free one again
    assert c.domain_id == a.domain_id
    c.release()


def test_a_domain_held_by_another_process_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(domain, "LOCK_DIR", tmp_path)
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from pathlib import Path; from dp_ros.runtime import domain; "
                               f"domain.LOCK_DIR = Path({str(tmp_path)!r}); c = domain.claim({{'ROS_DOMAIN_ID': '77'}}); "
                               "print('held', flush=True); time.sleep(30)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(domain.DomainInUse, match="ROS_DOMAIN_ID=77 is in use"):
            domain.claim({"ROS_DOMAIN_ID": "77"})
        env = {}
        other = domain.claim(env)             # without a request: some other free domain
        assert other.domain_id != 77
        other.release()
    finally:
        holder.kill()
        holder.wait()
    domain.claim({"ROS_DOMAIN_ID": "77"}).release()   # the holder is gone: its lock with it
