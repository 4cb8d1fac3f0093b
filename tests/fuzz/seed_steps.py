"""What the seed writers of the "steps" fuzz targets share (fuzz_support.h's Step format):
one step is op (1 byte), length (2 bytes, little endian), payload."""
import os
import struct


def step(op, payload=b""):
    if isinstance(payload, str):
        payload = payload.encode()
    return struct.pack("<BH", op, len(payload)) + payload


def write_seeds(out_dir, seeds):
    """Writes each seed (name -> list of steps) as one file in out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    for name, steps in seeds.items():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(b"".join(steps))
