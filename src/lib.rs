//! rlb: a layer-4/layer-7 load balancer and reverse proxy.
