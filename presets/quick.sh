# The whole chain at the smallest sizes that exercise every stage, in a couple of minutes (the tests run it);
# its numbers are noise.
RUN=runs/quick             # where the run's files go
DATA=digits                # the embedded 8x8 digits (1,797 images)
ARCH=digits-small          # the small UNet (ddpm.py)
CORRUPT=0.05               # the fraction of training images given the fault (noise)
TRAIN_STEPS=40             # training steps of the full model and of every retraining
PRUNE_STEPS=20             # fine-tuning steps after pruning
UNLEARN_STEPS=15           # sparsified unlearning's fine-tuning steps per subset
BATCH=32                   # batch size of every training
M=8                        # unlearned models (subsets)
R=3                        # models retrained from scratch for the retraining baseline
K=4                        # held-out subsets retrained from scratch: the LDS's ground truth
GT_SEEDS=1                 # training seeds per held-out subset
SEED_PAIRS=1               # baseline rows retrained with a second seed (FID between two seeds)
N_SAMPLES=64               # samples per model for the sampled behaviours
DDIM_STEPS=5               # DDIM steps of those samples
LOSS_DRAWS=1               # (t, eps) draws per reference image of loss and elbo (the default's 4 cost the tests time)
N_REF=512                  # reference images of FID and the loss (a seeded choice): the tests' runs, not all 1,797
GRID=16                    # samples in the PNG grid beside a checkpoint
BASELINES=loss,pixel-nn,feature-sim  # the cheap baselines (the gradient ones cost backward passes)
ROWS_PER_TASK=4            # Slurm: rows of a per-row stage per array task
QUALITY_DDIM=10            # DDIM steps of the full model's sampling for Table 1
DRAWS=4                    # random draws of each budget's models from their pool
