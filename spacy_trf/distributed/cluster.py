"""Connecting to a Ray cluster: an existing one at ``address``, or a local one."""

import logging

import numpy as np
import ray


def connect(address: str | None, cpus: int, gpus: float, worker_log_level: str = "INFO") -> bool:
    """Connect to ``address`` or start a local cluster; True if this call started Ray.

    worker_log_level (str): The least level that the job's Ray processes log.
    """
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if ray.is_initialized():
        return False
    workers = ray.LoggingConfig(log_level=worker_log_level)
    if address:
        try:
            ray.init(address=address, logging_level=logging.WARNING, logging_config=workers)
        except ConnectionError as err:
            raise ConnectionError(
                f"Could not connect to the Ray cluster at {address}: {err}. Check the address "
                "that `ray start --head` printed; a cluster with token authentication also needs "
                "RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN, or ~/.ray/auth_token)."
            ) from err
    else:
        ray.init(
            num_cpus=cpus,
            num_gpus=int(np.ceil(gpus)) if gpus else None,  # workers x GPUs per worker
            include_dashboard=False,
            logging_level=logging.WARNING,
            logging_config=workers,
        )
    return True
