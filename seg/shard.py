"""Write a dataset's splits as LitData shards to a folder or S3-compatible storage.

``seg-shard data=<name> data.root=DIR output=DIR|s3://bucket/prefix``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from seg.command import command


@command("shard")
def main(cfg: DictConfig) -> None:
    from seg.data.shards import shard_splits

    shard_splits(cfg)


if __name__ == "__main__":
    main()
