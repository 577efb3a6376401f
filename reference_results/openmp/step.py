"Median seconds of a train step (fwd+bwd, channels_last, fp32) of a zoo model at batch 8, in this process's OpenMP settings."
import os, statistics, sys, time, torch
from dst.models.zoo import build_model
net = build_model(sys.argv[1]).train().to(memory_format=torch.channels_last)
z = (torch.rand(8, 3, 127, 127) * 255).contiguous(memory_format=torch.channels_last)
x = (torch.rand(8, 3, 255, 255) * 255).contiguous(memory_format=torch.channels_last)
def step():
    out = net(z, x); out = next(iter(out.values())) if isinstance(out, dict) else out
    out.float().mean().backward()
step(); ts = []
for _ in range(5):
    t = time.perf_counter(); step(); ts.append(time.perf_counter() - t)
print(f"{sys.argv[1]} OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')} threads={torch.get_num_threads()}: median {statistics.median(ts):.3f} s/step")
