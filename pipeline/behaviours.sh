# run_pipeline.sh's stage 7: every model's behaviours (compute_fid.py), on this machine in two lanes of THREADS
# threads each when JOBS >= 2 (small pools are dominated by start-up, not arithmetic), sharing the largest pool
# (unlearn), each lane one process; FID2 and the seed pairs come last: they reuse the pools' cached per-model
# statistics. Sourced by run_pipeline.sh.
fid() { $PY compute_fid.py "${FID_FLAGS[@]}" "$@"; }
pool() { fid --models "$RUN/models/$1" --masks "$RUN/masks/$1.npy" --out "$RUN/behaviors/$1.npz"; }
fid2() { fid --models "$RUN/models/unlearn" --ref-models "$RUN/models/retrain" --masks "$RUN/masks/unlearn.npy" \
           --out "$RUN/behaviors/fid2.npz"; }
fid_seeds() { fid --models "$RUN/models/retrain_seed1" --ref-models "$RUN/models/retrain" \
                --masks "$RUN/masks/retrain.npy" --out "$RUN/behaviors/fid_seeds.npz"; }
untrained() { [ "$METHOD" != shapley ] || fid --models "$RUN/untrained.pt" --out "$RUN/behaviors/untrained.npz"; }
quality() { [ "$QUALITY_DDIM" = 0 ] || fid --models "$RUN/full.pt" --ddim-steps "$QUALITY_DDIM" --behaviors all \
                                        --out "$RUN/behaviors/quality.npz"; }
lane_a() { fid --models "$RUN/full.pt" --out "$RUN/behaviors/full.npz"; quality; pool unlearn; }
pools_rk() {  # the retraining baseline's, the ground truth's (and its ceiling's), leave-one-out's and GUDA's
  if [ "$BANKED" = 0 ]; then  # (a bank's are measured already)
    [ "$R" = 0 ] || pool retrain; [ "$K" = 0 ] || pool lds; [ "$LOO" = 0 ] || pool loo
    [ "$CEILING" = 0 ] || fid --models "$RUN/models/lds_ceiling" --masks "$RUN/masks/lds.npy" \
                           --out "$RUN/behaviors/lds_ceiling.npz"
  fi
  [ "$GUDA" = 0 ] || fid --models "$RUN/models/guda" --masks "$RUN/masks/loo.npy" --out "$RUN/behaviors/guda.npz"
}
lane_b() {
  fid --models "$RUN/pruned.pt" --out "$RUN/behaviors/pruned.npz"; pools_rk; untrained
  # then, when the unlearned pool outweighs this lane's own models twice, this lane samples the unlearned models
  # from the last one down until it meets the other lane (a bank's retrainings are not this lane's: the banked
  # default's lane b holds GUDA's 20 models against 96 unlearned ones, and sat idle for half the stage)
  local own=$N_GUDA
  [ "$BANKED" = 1 ] || own=$(( own + R + K * GT_SEEDS + N_LOO + CEILING ))
  if [ "$M" -gt $(( 2 * own )) ]; then
    fid --models "$RUN/models/unlearn" --masks "$RUN/masks/unlearn.npy" --out "$RUN/behaviors/unlearn.npz" --stats-only
  fi
}
fid_pairs() {  # FID2: FID between two models, so only when samples are drawn (and the retrained models are here)
  [ "$BANKED" = 0 ] || return 0
  [ "$SAMPLED" = 0 ] || [ "$R" = 0 ] || fid2
  [ "$SAMPLED" = 0 ] || [ "$SEED_PAIRS" = 0 ] || fid_seeds
}
proxy() {  # SurrogateSHAP's proxy game: one contributor-conditioned model, the first PROXY coalitions sampled with it
  [ "$PROXY" = 0 ] || [ "$SAMPLED" = 0 ] || $PY proxy_game.py --run "$RUN" "${DATA_FLAGS[@]}" --rows "$PROXY" \
                                              --device "$DEVICE"
}
stage_behaviours() {
  if [ "$JOBS" -ge 2 ]; then
    local lane
    OMP_NUM_THREADS=$THREADS batched lane_a & lane=$!
    OMP_NUM_THREADS=$THREADS batched lane_b
    wait "$lane"
    OMP_NUM_THREADS=$THREADS batched fid_pairs  # sampled with the lanes' thread count, as every other model
  else
    batched all_behaviours
  fi
  batched proxy
}
all_behaviours() {
  fid --models "$RUN/full.pt" --out "$RUN/behaviors/full.npz"; quality
  fid --models "$RUN/pruned.pt" --out "$RUN/behaviors/pruned.npz"
  pool unlearn; pools_rk; untrained; fid_pairs
}
