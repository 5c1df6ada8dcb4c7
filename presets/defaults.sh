# Every setting a preset leaves unset (read after the preset; the environment wins over both).
FAULT=noise                # data.FAULTS: noise, blur, duplicate, one-class, watermark; several comma-separated share CORRUPT
CONTRIBUTORS=              # contributor level: classes, random:G or FILE.npy (make_subsets.py --groups); empty: images
METHOD=datamodel           # the estimator: datamodel, banzhaf (half-subsets) or shapley (Shapley-kernel subsets)
ALPHA=0.5                  # the fraction of the training data in a subset
RATIO=0.3                  # structured pruning ratio
UNLEARN_METHOD=gd          # unlearn.py --method (gd from the pruned model; gd-full from the full model)
TRAIN_FLAGS=               # added to every train_ddpm.py call (the recipe)
UNLEARN_FLAGS=             # added to every unlearn.py call
FULL=                      # a checkpoint to attribute instead of training one (tools/import_model.py makes one)
BEHAVIORS=all              # what compute_fid.py measures per model (all, or keys such as fid,loss)
HEADLINE=auto              # the behaviour the report leads with (auto: fid when computed, else runfolder.headline's)
LOSS_DRAWS=4               # (t, eps) draws per reference image of loss and elbo
FEATURES=auto              # FID's features (auto: cnn on digits, inception on CIFAR-10)
N_REF=0                    # reference images for FID (0: all)
REF_DATA=                  # FID against another reference set (e.g. npz:curated.npz)
INCEPTION_WEIGHTS=         # pytorch-fid's weights file where there is no internet
QUALITY_DDIM=0             # the full model sampled once more with N DDIM steps for Table 1 (0: none)
BASELINES=all              # the field's baselines (baselines.py: all, none, or names such as loss,pixel-nn,trak)
BASELINE_FLAGS=            # added to baselines.py's call
LOO=auto                   # leave-one-out retrainings (auto: at the contributor level when baselines run)
GUDA=0                     # GUDA (contributor level): each contributor unlearned once from the full model
GUDA_STEPS=100             # GUDA's unlearning steps per contributor (unlearn.py's default)
PROXY=0                    # SurrogateSHAP's proxy game on the first N coalitions of masks/unlearn.npy (0: off)
DRAWS=50                   # random draws of each budget's models from their pool (eval_lds.py --draws)
COMPARE=retraining         # the declared comparisons, unlearning against each, the primary first (eval_lds.py --compare)
MARGIN=0.10                # the equivalence margin of LDS: "level" needs TOST within it
ALSO=                      # more estimators of the unlearned models, rows of their own (eval_lds.py --also; none: no row)
CEILING=0                  # the first N held-out subsets retrained with one more seed: the LDS a perfect predictor reaches
JOBS=2                     # processes side by side for per-row stages (the cores are shared among them)
DEVICE=auto                # cpu, cuda or auto
SCHEDULER=local            # local, or slurm (every stage a job, per-row stages job arrays)
ROWS_PER_TASK=8            # Slurm: rows of a per-row stage per array task
CPUS=2                     # Slurm: CPUs per task
GPUS=0                     # Slurm: GPUs per task (--gres=gpu:N)
PARTITION=                 # Slurm: the partition (empty: SBATCH_PARTITION or the cluster's default)
SBATCH_FLAGS=              # Slurm: added to every sbatch call (e.g. "--account=lab --qos=short")
ARRAY_MAX=                 # Slurm: at most N tasks of an array at once
