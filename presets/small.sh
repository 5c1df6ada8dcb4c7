# The default's data, contributors and estimator with a short recipe whose model barely generates digits (12 min);
# bench/faults.py and bench/counterfactual.py measure on it. Its figures: docs/presets.md.
RUN=runs/small             # where the run's files go
DATA=digits                # the embedded 8x8 digits
ARCH=digits-small          # the small UNet
CORRUPT=0.15               # the fraction of training images given a fault
FAULT=blur,duplicate,watermark  # the default's faults
CONTRIBUTORS=random:20     # 20 contributors of random digits
METHOD=shapley             # Shapley values
TRAIN_STEPS=300            # training steps of the full model and of every retraining
PRUNE_STEPS=300            # fine-tuning steps after pruning
UNLEARN_STEPS=12           # sparsified unlearning's steps per subset
BATCH=64                   # batch size of every training
UNLEARN_METHOD=gd          # the paper's unlearning
M=96                       # unlearned models
R=16                       # models retrained from scratch for the retraining baseline
K=24                       # held-out subsets retrained from scratch
GT_SEEDS=1                 # training seeds per held-out subset
SEED_PAIRS=2               # baseline rows retrained with a second seed
N_SAMPLES=2000             # samples per model for the sampled behaviours
DDIM_STEPS=5               # DDIM steps of those samples
COMPARE=retraining,loo,ekfac-ref,d-trak-ref,trak-ref  # declared before the run: the primary (retraining at equal compute), then the strongest comparators
