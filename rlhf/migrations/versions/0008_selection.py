"""active selection: the project's strategy, stored scores, the task's rank, why each annotation's task was chosen

`project.selection` names the strategy (least-annotated by default: nothing changes for existing
projects); the `select-scores` job writes `selectionscore` rows and copies each rank onto
`task.selection_rank`, which `ix_task_selection` orders so the pick stays an index walk;
ratings and preferences record the strategy, score and random-share flag of their task (issue 21).

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-05 13:20:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0008'
down_revision = '0006'
branch_labels = None
depends_on = None

SELECTION_INDEX = ['project_id', 'kind', 'is_gold', 'annotation_count', 'selection_rank', 'shuffle_key']


def _reason_columns():
    return [
        sa.Column('selection_strategy', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column('selection_score', sa.Float(), nullable=True),
        sa.Column('selection_random', sa.Boolean(), nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.add_column(sa.Column('selection', sqlmodel.sql.sqltypes.AutoString(length=32), server_default='least-annotated', nullable=False))
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.add_column(sa.Column('selection_rank', sa.Integer(), server_default='0', nullable=False))
        batch_op.create_index('ix_task_selection', SELECTION_INDEX, unique=False)
    for table in ('rating', 'preference'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in _reason_columns():
                batch_op.add_column(column)

    op.create_table('selectionscore',
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('strategy', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('is_random', sa.Boolean(), nullable=False),
    sa.Column('computed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['task_id'], ['task.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('task_id')
    )
    with op.batch_alter_table('selectionscore', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_selectionscore_project_id'), ['project_id'], unique=False)

    op.create_table('selectionstate',
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('requested', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('applied', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('note', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
    sa.Column('labels_at', sa.Integer(), nullable=False),
    sa.Column('reward_artifact_id', sa.Integer(), nullable=True),
    sa.Column('scored_tasks', sa.Integer(), nullable=False),
    sa.Column('seconds', sa.Float(), nullable=False),
    sa.Column('computed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('history', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['reward_artifact_id'], ['artifact.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('project_id')
    )


def downgrade() -> None:
    op.drop_table('selectionstate')
    with op.batch_alter_table('selectionscore', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_selectionscore_project_id'))
    op.drop_table('selectionscore')
    for table in ('preference', 'rating'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name in ('selection_random', 'selection_score', 'selection_strategy'):
                batch_op.drop_column(name)
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.drop_index('ix_task_selection')
        batch_op.drop_column('selection_rank')
    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.drop_column('selection')
