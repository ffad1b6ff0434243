"""Training: build a config's model and state, the step, the loop over 1..S runs, run folders.

  build     config -> model, optimizer, plateau, conditioning, initial state
  state     TrainState, optimizer, plateau and early-stopping bookkeeping
  step      the jitted train step, chunks of steps, prediction
  loop      train(config, workdirs, seeds): one epoch loop for a run or a replica group
  hooks     what runs around the steps (metrics, checkpoints, console, NaN guard, profiler)
  rundir    the files of one run
  replicate one function over S replicas (unroll, vmap, hybrid)
  mesh      data parallelism over devices
"""
