# The image level (the paper's setting): 1,797 digits, 10% replaced by noise; one datamodel score per image.
# One recipe of 500 steps for the full model, the baseline and the ground truth. Its figures: docs/presets.md.
RUN=runs/images            # where the run's files go
DATA=digits                # the embedded 8x8 digits
ARCH=digits-small          # the small UNet
CORRUPT=0.1                # the fraction of training images replaced by noise
TRAIN_STEPS=500            # training steps of the full model and of every retraining
PRUNE_STEPS=200            # fine-tuning steps after pruning
UNLEARN_STEPS=13           # unlearning steps per subset (13 of two minibatches: about gd's 25 in compute)
BATCH=64                   # batch size of every training
UNLEARN_METHOD=neggrad     # bench/unlearn_fidelity.py's best at this size
UNLEARN_FLAGS="--lr 3e-4 --warmup 0 --ascent-weight 0.5 --batches epoch"  # its recipe
M=224                      # unlearned models
R=16                       # models retrained from scratch for the retraining baseline
K=24                       # held-out subsets retrained from scratch
GT_SEEDS=2                 # training seeds per held-out subset (their mean is the ground truth)
SEED_PAIRS=4               # baseline rows retrained with a second seed
N_SAMPLES=1000             # samples per model for the sampled behaviours
DDIM_STEPS=10              # DDIM steps of those samples
DRAWS=10                   # draws per budget (the datamodel's cross-validated fit on 224 x 1,797 costs seconds)
COMPARE=retraining,budget:2,budget:4,budget:8,budget:16,budget:32,budget:64  # declared: the seed paper's comparison, at equal compute and at each budget
BANK_K=200                 # from the bank: 200 held-out subsets at two seeds (docs/bank.md: the power analysis), once it holds them
BANK_R=64                  # and a retraining pool of at least 64 models
