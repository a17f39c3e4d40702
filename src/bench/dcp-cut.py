#!/usr/bin/env python3
"""Cuts a safetensors checkpoint into the files of a sharded save, as PyTorch DCP's Hugging Face storage
writer lays them out for RANKS ranks: shard-R-model-00001-of-00001.safetensors, each tensor's pieces
described by DCP_SHARDING_INFO (saved_offsets) in __metadata__, written last, as NeMo Automodel's writer
does; config.json goes to .hf_metadata/. Tensors are cut into row pieces of their first dimension (FSDP),
each rank's rows contiguous in the input, so the bytes are copied file to file (copy_file_range).

    dcp-cut.py IN_FOLDER OUT_FOLDER [RANKS]
"""
import glob, json, os, re, shutil, struct, sys

src, dst = sys.argv[1], sys.argv[2]
ranks = int(sys.argv[3]) if len(sys.argv) > 3 else 4
os.makedirs(os.path.join(dst, ".hf_metadata"), exist_ok=True)
if os.path.exists(os.path.join(src, "config.json")):
    shutil.copy(os.path.join(src, "config.json"), os.path.join(dst, ".hf_metadata", "config.json"))

pieces = {r: [] for r in range(ranks)}  # rank -> [(name, dtype, shape, offsets, file, begin, length)]
expert_key = re.compile(r".*\.mlp\.experts\.(\d+)\.")
with open(os.path.join(src, "config.json")) as f:
    num_experts = json.load(f).get("num_experts", 1)
for path in sorted(glob.glob(os.path.join(src, "*.safetensors"))):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    data_start = 8 + n
    for name, e in header.items():
        if name == "__metadata__":
            continue
        shape, (b, end) = e["shape"], e["data_offsets"]
        expert = expert_key.match(name)
        if expert:
            rank = int(expert.group(1)) * ranks // num_experts
            pieces[rank].append((name, e["dtype"], shape, [0] * len(shape), path, data_start + b, end - b))
            continue
        rows = shape[0] if shape else 1
        row_bytes = (end - b) // rows if rows else 0
        step = -(-rows // ranks)
        for r in range(ranks):
            r0, r1 = min(rows, r * step), min(rows, (r + 1) * step)
            if r1 <= r0 and r > 0:
                continue
            piece_shape = [r1 - r0] + shape[1:] if shape else []
            offsets = [r0] + [0] * (len(shape) - 1) if shape else []
            pieces[r].append((name, e["dtype"], piece_shape, offsets, path, data_start + b + r0 * row_bytes,
                              (r1 - r0) * row_bytes if shape else end - b))

for r, mine in pieces.items():
    if not mine:
        continue
    entries, sharding, at = {}, {}, 0
    for name, dtype, shape, offsets, _, _, length in mine:
        entries[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + length]}
        sharding[name] = {"saved_offsets": offsets}
        at += length
    entries["__metadata__"] = {"DCP_SHARDING_INFO": json.dumps(sharding), "DCP_VERSION": "1.0", "format": "pt"}
    head = json.dumps(entries, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(os.path.join(dst, "shard-%05d-model-00001-of-00001.safetensors" % (r + 1)), "wb") as out:
        out.write(struct.pack("<Q", len(head)) + head)
        out.flush()
        for _, _, _, _, path, begin, length in mine:
            with open(path, "rb") as f:
                left, pos = length, begin
                while left > 0:
                    copied = os.copy_file_range(f.fileno(), out.fileno(), left, pos)
                    if copied <= 0:
                        raise SystemExit("short copy from " + path)
                    pos += copied
                    left -= copied
