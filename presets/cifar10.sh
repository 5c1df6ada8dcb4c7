# The paper's settings (GPU / cluster): Ho et al.'s 35.7M UNet, 200k steps, prune ratio 0.3, 4k unlearning steps
# (2%), DDIM 100, Inception FID, alpha 0.5.
RUN=runs/cifar10           # where the run's files go
DATA=cifar10               # torchvision's CIFAR-10 download (50,000 images)
ARCH=cifar10               # Ho et al.'s UNet
CORRUPT=0                  # no planted fault
TRAIN_STEPS=200000         # training steps of the full model and of every retraining
PRUNE_STEPS=0              # no fine-tuning after pruning
UNLEARN_STEPS=4000         # sparsified unlearning's steps per subset
BATCH=128                  # batch size of every training
M=256                      # unlearned models
R=16                       # models retrained from scratch for the retraining baseline
K=50                       # held-out subsets retrained from scratch
GT_SEEDS=2                 # training seeds per held-out subset
SEED_PAIRS=2               # baseline rows retrained with a second seed
N_SAMPLES=10000            # samples per model
DDIM_STEPS=100             # DDIM steps of those samples
TRAIN_FLAGS="--lr 2e-4 --warmup 5000 --lr-schedule constant --ema-decay 0.9999 --hflip --ckpt-every 5000"  # the recipe
UNLEARN_FLAGS="--lr 2e-4 --ema-decay 0.9999"  # unlearning's recipe
FEATURES=inception         # pytorch-fid's Inception (its weights: INCEPTION_WEIGHTS=path without internet)
ROWS_PER_TASK=1            # Slurm: one retraining (~20 GPU-hours at the paper's size) per array task
GPUS=1                     # Slurm: GPUs per task
CPUS=8                     # Slurm: CPUs per task
TASK_TIME=2-00:00:00       # Slurm: a task's time limit (unless WALLTIME or SBATCH_TIMELIMIT says)
TASK_MEM=32G               # Slurm: a task's memory (unless MEM or SBATCH_MEM_PER_NODE says)
