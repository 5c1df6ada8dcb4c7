# The main job, at the contributor level (Lin, Lu et al., ICLR 2025): 20 contributors of ~90 digits, three of whom
# gave faulty images; Shapley values from unlearned and retrained models, leave-one-out and the field's baselines
# beside them. What it measures and how each setting was chosen: docs/default.md.
RUN=runs/default           # where the run's files go
DATA=digits                # the embedded 8x8 digits (1,797 images)
ARCH=digits-small          # the small UNet (ddpm.py)
CORRUPT=0.15               # the fraction of training images given a fault
FAULT=blur,duplicate,watermark  # blurred, spam (near-copies of 6 digits) and watermarked digits, a contributor each
CONTRIBUTORS=random:20     # 20 contributors of random digits (the faulty ones get seeded random ids)
METHOD=shapley             # Shapley values (subsets follow the Shapley kernel)
LOO=1                      # leave-one-out: 20 retrainings, the strongest retraining estimator here
TRAIN_STEPS=1500           # training steps of the full model and of every retraining
TRAIN_FLAGS="--lr 3e-3"    # the training recipe's learning rate
PRUNE_STEPS=600            # fine-tuning steps after pruning
UNLEARN_STEPS=12           # sparsified unlearning's steps per subset (gd from the pruned model): chosen on bank/default's validation block (bench/tune_unlearning.py --what models; docs/unlearning.md)
BATCH=64                   # batch size of every training
UNLEARN_METHOD=gd          # the paper's unlearning: gradient descent on the subset, from the pruned model
M=96                       # unlearned models: where KernelSHAP's LDS on the validation block stops rising (within 0.02 of 192 models'; --what models)
R=8                        # models retrained from scratch for the retraining baseline
K=24                       # held-out half-subsets retrained from scratch: the LDS's ground truth
GT_SEEDS=1                 # training seeds per held-out subset
SEED_PAIRS=0               # no second-seed pair (CEILING=16 measures the ground truth's noise)
N_SAMPLES=1000             # samples per model for the sampled behaviours
DDIM_STEPS=20              # DDIM steps of those samples
QUALITY_DDIM=100           # DDIM steps of the full model's sampling for Table 1
ALSO=surrogate-shap,surrogate-shap-published,hybrid,shapley-paired-half,shapley-unpaired-half  # rows of the same unlearned models: SurrogateSHAP (ours, as published), the hybrid, paired against unpaired sampling at half the models
BASELINE_FLAGS="--ridge 0.001 --proj-dim 1024 --dtrak-ridge 0.1 --dtrak-proj-dim 1024 --ekfac-damping 10"  # chosen on the retraining pool with --ref-queries others, never the held-out subsets (bench/tune_baselines.py; docs/newest.md)
GUDA=1                     # GUDA: each contributor unlearned once from the full model (20 short fine-tunes)
GUDA_FLAGS="--lr 1e-3"     # its schedule, chosen on the leave-one-out retrainings (bench/tune_unlearning.py --what guda; docs/newest.md)
COMPARE=retraining,loo,ekfac-ref,d-trak-ref,trak-ref,surrogate-shap,guda,hybrid/loo,hybrid/ekfac-ref,hybrid/guda,shapley-paired-half/shapley-unpaired-half  # declared before the run: the primary (the paper's claim: retraining at equal compute), the strongest comparators, the hybrid against three, paired minus unpaired sampling
BANK_K=200                 # from the bank: 200 held-out subsets (docs/bank.md: the power analysis), once it holds them
BANK_R=64                  # and a retraining pool of at least 64 models
