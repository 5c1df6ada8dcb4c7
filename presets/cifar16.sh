# Natural images on a CPU: 2,000 CIFAR-10 training images (200 a class) at 16x16 colour, the default's faults and
# contributors. Headline: the loss (FID in a classifier trained here did not see noise contributors; with
# INCEPTION_WEIGHTS=path, HEADLINE=fid is the paper's). Its figures: docs/presets.md.
RUN=runs/cifar16           # where the run's files go
DATA=cifar10@16:2000       # torchvision's CIFAR-10 download, 2,000 images downsampled to 16x16
ARCH=digits-small          # the small UNet (90 ms a training step on one core)
CORRUPT=0.15               # the fraction of training images given a fault
FAULT=blur,duplicate,watermark  # the default's faults
CONTRIBUTORS=random:20     # 20 contributors
METHOD=shapley             # Shapley values
LOO=0                      # no leave-one-out
HEADLINE=loss              # the behaviour the report leads with
TRAIN_STEPS=1000           # training steps of the full model and of every retraining
PRUNE_STEPS=400            # fine-tuning steps after pruning
UNLEARN_STEPS=24           # sparsified unlearning's steps per subset
BATCH=64                   # batch size of every training
UNLEARN_METHOD=gd          # the paper's unlearning
M=96                       # unlearned models
R=8                        # models retrained from scratch for the retraining baseline
K=32                       # held-out subsets retrained from scratch
GT_SEEDS=1                 # training seeds per held-out subset
SEED_PAIRS=1               # baseline rows retrained with a second seed
N_SAMPLES=500              # samples per model (cnn features, DDIM-20)
DDIM_STEPS=20              # DDIM steps of those samples
QUALITY_DDIM=100           # DDIM steps of the full model's sampling for Table 1
COMPARE=retraining,ekfac-ref,d-trak-ref,trak-ref  # declared before the run: the primary (retraining at equal compute), then the strongest comparators
