"""Calibration against real hosts: the matrix of cases, the guest's truth, the fit of a
profile (``livemig calibrate``) and the sim-vs-real error table (``livemig compare``)."""
