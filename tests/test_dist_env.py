"""Ranks and rendezvous of a multi-task scheduler job (SLURM, submitit's local executor) without torchrun."""

from __future__ import annotations

from arc_lab.dist import expand_nodelist, job_port, scheduler_env


def test_nodelist_expansion():
    assert expand_nodelist("gpu[01-03,07],login5") == ["gpu01", "gpu02", "gpu03", "gpu07", "login5"]
    assert expand_nodelist("node7") == ["node7"]
    assert expand_nodelist("a[9-11]") == ["a9", "a10", "a11"]


def test_slurm_task_env():
    env = {"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8", "SLURM_JOB_NODELIST": "gpu[12-15]",
           "SLURM_JOB_ID": "4242"}  # fmt: skip
    assert scheduler_env(env) == {
        "RANK": "5",
        "LOCAL_RANK": "1",
        "WORLD_SIZE": "8",
        "MASTER_ADDR": "gpu12",
        "MASTER_PORT": str(job_port("4242")),
    }
    # every task of the job gets the same rendezvous; another job another port
    other = scheduler_env({**env, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"})
    assert (other["MASTER_ADDR"], other["MASTER_PORT"]) == ("gpu12", str(job_port("4242")))
    assert job_port("4243") != job_port("4242") and 20000 <= job_port("4242_7") < 30000


def test_submitit_local_env():
    env = {"SUBMITIT_LOCAL_JOB_ID": "77", "SUBMITIT_LOCAL_NTASKS": "2", "SUBMITIT_LOCAL_GLOBALID": "1",
           "SUBMITIT_LOCAL_LOCALID": "1"}  # fmt: skip
    assert scheduler_env(env) == {
        "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(job_port("77"))
    }  # fmt: skip


def test_single_task_jobs_and_launched_ranks_are_left_alone():
    assert scheduler_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == {}
    assert scheduler_env({"SUBMITIT_LOCAL_JOB_ID": "1", "SUBMITIT_LOCAL_NTASKS": "1"}) == {}
    assert (
        scheduler_env({"RANK": "0", "SLURM_PROCID": "3", "SLURM_NTASKS": "4"}) == {}
    )  # torchrun inside SLURM
    assert scheduler_env({}) == {}
