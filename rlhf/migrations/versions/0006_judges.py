"""judgment: model judges' verdicts with their raw replies and lineage (issue 19)

A judge is the external user `judge:<name>`; its parsed verdicts are stored as that user's
preferences and ratings like any label. This table keeps the rest: the raw reply of each order,
the parsed verdict per order, the status (parsed / inconsistent / unparsed), the template's hash
and the model's identity, one row per (task, judge) so a resumed run never judges a task twice.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 13:30:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('judgment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('verdict', sa.JSON(), nullable=False),
    sa.Column('raw', sa.JSON(), nullable=False),
    sa.Column('template_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('model', sa.JSON(), nullable=False),
    sa.Column('run_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['task_id'], ['task.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('task_id', 'user_id')
    )
    with op.batch_alter_table('judgment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_judgment_project_id'), ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_judgment_task_id'), ['task_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_judgment_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('judgment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_judgment_user_id'))
        batch_op.drop_index(batch_op.f('ix_judgment_task_id'))
        batch_op.drop_index(batch_op.f('ix_judgment_project_id'))
    op.drop_table('judgment')
