"""ranking tasks: K replies per prompt ordered by one annotator, with ties and an "all bad" flag

Adds the `ranking` table (one ordering per task and user, as `preference` holds one choice),
`task.response_ids` (the K replies of a ranking task, card a first) and the project's range of
K (`rank_k_min`, `rank_k_max`; NULL: the project does not collect rankings). Existing rows are
kept as they are: every column added is nullable (issue 18).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 13:30:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rank_k_min', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('rank_k_max', sa.Integer(), nullable=True))
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.add_column(sa.Column('response_ids', sa.JSON(), nullable=True))
    op.create_table('ranking',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('groups', sa.JSON(), nullable=False),
    sa.Column('all_bad', sa.Boolean(), nullable=False),
    sa.Column('shown_order', sa.JSON(), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('time_spent_s', sa.Float(), nullable=True),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['task_id'], ['task.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('task_id', 'user_id')
    )
    with op.batch_alter_table('ranking', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ranking_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_ranking_task_id'), ['task_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_ranking_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('ranking', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ranking_user_id'))
        batch_op.drop_index(batch_op.f('ix_ranking_task_id'))
        batch_op.drop_index(batch_op.f('ix_ranking_created_at'))
    op.drop_table('ranking')
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.drop_column('response_ids')
    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.drop_column('rank_k_max')
        batch_op.drop_column('rank_k_min')
