"""The one catalogue of condition types, condition reasons and event reasons (all CamelCase).

docs/architecture.md lists the same catalogue for users; a unit test keeps the two in step.
"""

from __future__ import annotations

# Condition types.
READY = "Ready"
DATABASE_READY = "DatabaseReady"
CACHE_READY = "CacheReady"
APP_READY = "AppReady"
INGRESS_READY = "IngressReady"
FAILOVER_IN_PROGRESS = "FailoverInProgress"
# False while a child's name is taken by an object that is not this Architecture's: nothing is applied.
CHILDREN_OWNED = "ChildrenOwned"
CONDITION_TYPES = (READY, DATABASE_READY, CACHE_READY, APP_READY, INGRESS_READY, FAILOVER_IN_PROGRESS,
                   CHILDREN_OWNED)

# Condition reasons.
ALL_TIERS_READY = "AllTiersReady"
TIERS_NOT_READY = "TiersNotReady"
TIER_READY = "TierReady"
TIER_PROGRESSING = "TierProgressing"
TIER_DISABLED = "TierDisabled"
TIER_DEGRADED = "TierDegraded"
PODS_UNSCHEDULABLE = "PodsUnschedulable"  # no node can take one of the tier's pods: the scheduler's words
PODS_FAILING = "PodsFailing"  # a pod of the tier cannot start: image pull, crash loop, invalid config
NO_FAILOVER = "NoFailover"
# Also an event (warning): the Postgres image to roll out names another major version than the data's, so the
# database keeps its running image (archop/images.py).
MAJOR_UPGRADE_REFUSED = "MajorUpgradeRefused"
ALL_CHILDREN_OWNED = "AllChildrenOwned"  # ChildrenOwned is True

# Event reasons: reconcile.
CHILDREN_APPLIED = "ChildrenApplied"
RECONCILE_FAILED = "ReconcileFailed"
SECRETS_CREATED = "SecretsCreated"
# The connection keys of N-db-app or N-cache were written from the Secret's own password (unchanged).
SECRETS_UPDATED = "SecretsUpdated"
SERVER_CERTIFICATE_RENEWED = "ServerCertificateRenewed"
# A password changed in N-db-app or N-cache reached its server and the connection keys
# (handlers/passwords.py); the pods that read it roll. Never the password itself.
PASSWORD_ROTATED = "PasswordRotated"
PASSWORD_ROTATION_FAILED = "PasswordRotationFailed"  # setting it on the leader failed: tried again
FOLLOWERS_SCALED = "FollowersScaled"
UNSAFE_CHANGE_REFUSED = "UnsafeChangeRefused"
VOLUMES_GROWN = "VolumesGrown"
VOLUME_GROWTH_REFUSED = "VolumeGrowthRefused"
DELETING = "Deleting"
# Ownership (ownership.py, hosts.py): event reasons, and condition reasons of ChildrenOwned and IngressReady.
FOREIGN_OBJECT = "ForeignObject"  # a child's name is taken by an object that is not this Architecture's
INGRESS_HOST_TAKEN = "IngressHostTaken"  # spec.ingress.host belongs to (or is being decided for) another one

# Event reasons: which operator release manages an Architecture (handlers/claim.py).
MANAGED_BY_ANOTHER_OPERATOR = "ManagedByAnotherOperator"  # another live release claimed it: hands off
CLAIM_TAKEN_OVER = "ClaimTakenOver"  # the release that claimed it is gone: this one manages it now

# Event reasons: database health and failover.
LEADER_ELECTED = "LeaderElected"  # first leader chosen at bootstrap
LEADER_UNREACHABLE = "LeaderUnreachable"
FAILOVER_STARTED = "FailoverStarted"
FAILOVER_BLOCKED = "FailoverBlocked"
LEADER_FENCED = "LeaderFenced"
FOLLOWER_PROMOTED = "FollowerPromoted"
SERVICES_REWIRED = "ServicesRewired"
FOLLOWERS_REPOINTED = "FollowersRepointed"
FAILOVER_COMPLETED = "FailoverCompleted"
FOLLOWER_REJOINED = "FollowerRejoined"
REJOIN_BY_BASE_BACKUP = "RejoinByBaseBackup"
SWITCHOVER_STARTED = "SwitchoverStarted"
SWITCHOVER_COMPLETED = "SwitchoverCompleted"
FAILOVER_ABORTED = "FailoverAborted"  # nobody was promoted and the old leader answers again: it leads again
SYNC_STANDBYS_UPDATED = "SynchronousStandbysUpdated"
# A follower needs WAL the leader no longer has (its slot is lost, or it is older than the leader's oldest
# segment): it is stopped with the rebuild marker and cloned afresh by its start script.
REBUILD_STARTED = "RebuildStarted"
FOLLOWER_REBUILT = "FollowerRebuilt"  # a rebuilt follower streams again


# Failover/switchover reasons recorded in status.failover.reason (and used as event reasons where noted).
LEADER_POD_LOST = "LeaderPodLost"  # the leader's pod is gone, not running, or its node is NotReady
LEADER_NOT_PRIMARY = "LeaderNotPrimary"  # the leader answers but is in recovery
SWITCHOVER_REQUESTED = "SwitchoverRequested"  # spec.database.switchoverTo or the switchover annotation
ROLLING_UPDATE = "RollingUpdate"  # the leader's pod runs an outdated revision
SCALE_DOWN = "ScaleDown"  # the leader's ordinal is being removed
LEADER_NODE_DRAINING = "LeaderNodeDraining"  # the leader's node is cordoned (kubectl drain starts so)
OPERATOR_CUT_OFF = "OperatorCutOff"  # the operator reaches no database instance: it does nothing
REJOIN_STARTED = "RejoinStarted"  # an old leader answers as a primary: its pod is restarted to rewind
FOLLOWER_STUCK = "FollowerStuck"  # a follower cannot follow the leader's timeline: restarted to rewind
POD_UPDATED = "PodUpdated"  # rolling update: an outdated pod was deleted to get the new revision
# A non-leader's postgres was killed (exit 137, OOM) and waits out the kubelet's restart back-off: its pod
# is deleted so it restarts (and rejoins) at once.
RESTART_BACK_OFF_SKIPPED = "RestartBackOffSkipped"
LEADER_UNFENCED = "LeaderUnfenced"  # the fence (read-only) on the current leader was lifted
